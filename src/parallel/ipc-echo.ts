// The child of the transport probe (bench-all-to-all.ts): echoes every IPC message back.

process.on('message', (m) => { process.send!(m as object); });
