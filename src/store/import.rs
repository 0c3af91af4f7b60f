//! Import of the Node.js version's `data/key_pool.json`. Being written.
