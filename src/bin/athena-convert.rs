fn main() {
    eprintln!("athena-convert: not built yet");
    std::process::exit(2);
}
