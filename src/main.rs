fn main() {
    println!("meridian-operator: not yet implemented");
}
