//! Delete LAN namespaces (and their processes) left by test processes that
//! are gone, e.g. killed by a timeout. `tests/run` runs it at the end.

fn main() {
    offload_tests::lan::sweep_stale();
}
