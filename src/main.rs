fn main() {
    std::process::exit(awning::cli::main());
}
