fn main() -> std::process::ExitCode {
    botmox_control_plane::cli::main()
}
