fn main() {
    println!("nova-live-migration");
}
