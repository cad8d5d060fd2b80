/// mimalloc rather than the system allocator: the server allocates small, short-lived buffers
/// on every frame and request, and glibc's malloc was about a sixth of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    botmox_control_plane::cli::main()
}
