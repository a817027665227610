//! Link the guest as a static, position-dependent ELF at the address the monitor loads it.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in ["-nostartfiles", "-nostdlib", "-static"] {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:rustc-link-arg=-Wl,-T,{dir}/linker.ld");
    println!("cargo:rustc-link-arg=-Wl,--build-id=none");
    println!("cargo:rerun-if-changed=linker.ld");
}
