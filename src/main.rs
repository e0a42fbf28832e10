//! The `ithn-dist` binary: parse arguments, run the command, turn errors into exit codes.
fn main() {
    std::process::exit(ithn_dist::cli::main());
}
