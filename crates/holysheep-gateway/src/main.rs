//! `holysheep-gateway`: the OpenAI-compatible gateway. `--help` lists every setting.

fn main() -> std::process::ExitCode {
    holysheep_gateway::cli::main()
}
