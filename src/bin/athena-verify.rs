fn main() {
    eprintln!("athena-verify: not built yet");
    std::process::exit(2);
}
