// A request through Pingora makes some sixty allocations, many of them
// short-lived and some of them large (the per-request future is boxed):
// mimalloc's thread-local free lists serve them for a fraction of glibc's cost
// (benches/PROFILE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(awning::cli::main());
}
