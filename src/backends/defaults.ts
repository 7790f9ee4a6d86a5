// Registers the built-in backends (js always, native when its addon loads). Imported by the ops
// module, so any entry point that computes has them, not only the package index.

import './js/index.js';
import './native/index.js';
