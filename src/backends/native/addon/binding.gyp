# Builds the moe_native addon. OpenBLAS is used when detect-blas.cjs can link a probe against it
# (MOE_NO_OPENBLAS=1 forces the portable SGEMM); oneDNN likewise through detect-dnnl.cjs
# (MOE_NO_DNNL=1 leaves it out). Vector code is compiled per target
# (AVX-512 / AVX2 / baseline) and picked at run time, so the binary stays portable.
{
  "variables": {
    "moe_openblas%": "<!(node detect-blas.cjs)",
    "moe_dnnl%": "<!(node detect-dnnl.cjs)"
  },
  "targets": [
    {
      "target_name": "moe_native",
      "sources": [
        "binding.cc",
        "threadpool.cc",
        "gemm.cc",
        "gemm_fallback.cc",
        "gemm_dnnl.cc",
        "gemm_epilogue.cc",
        "gemv.cc",
        "bandwidth.cc",
        "elementwise.cc",
        "reduce.cc",
        "rows.cc",
        "norm.cc",
        "loss.cc",
        "peak.cc",
        "quant.cc",
        "attention.cc",
        "experts_decode.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags": ["-O3"],
      "cflags_cc": ["-O3", "-std=gnu++17", "-fexceptions", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fopenmp-simd", "-Wno-psabi"],
      "ldflags": ["-pthread"],
      "conditions": [
        ["moe_openblas==1", {
          "defines": ["MOE_HAVE_OPENBLAS"],
          "libraries": ["-lopenblas"]
        }],
        ["moe_dnnl==1", {
          "defines": ["MOE_HAVE_DNNL"],
          "libraries": ["-ldnnl", "-lgomp"]
        }],
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=gnu++17", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-fopenmp-simd"]
          }
        }]
      ]
    }
  ]
}
