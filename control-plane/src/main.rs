/// mimalloc rather than the system allocator: the server allocates small, short-lived buffers
/// on every frame and request, and glibc's malloc was about a sixth of its CPU under load.
/// Built `no_thp`: mimalloc otherwise asks for transparent huge pages on its arenas, and the
/// kernel then zeroes 2 MiB at every first touch. A bulk action of 10,000 bots grows the heap
/// by tens of MiB at once, and zeroing huge pages was 67% of the server's CPU while it planned
/// one (perf); without them `api-queue` bulk on Postgres ran 8,601 → 9,441 commands/s (server
/// CPU 37 → 28 µs per command), single and SQLite unchanged (docs/ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    botmox_control_plane::cli::main()
}
