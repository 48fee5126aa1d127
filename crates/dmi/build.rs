//! Generates the DMI v1beta1 clients and servers from `proto/api.proto` with protox (a pure Rust
//! protobuf compiler, so no `protoc` is needed) and tonic-prost-build. The descriptor set is kept
//! too, so tests can check field numbers against upstream's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["api.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("dmi_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Channels are dialed by hand (unix sockets), so no `connect(url)` constructors.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
