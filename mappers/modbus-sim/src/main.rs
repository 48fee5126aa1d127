//! `modbus-sim [--listen ADDR]`: a simulated Modbus TCP thermometer (see the library docs) on
//! `ADDR` (default `127.0.0.1:5020`; port 0 picks a free one). Prints
//! `modbus-sim listening on IP:PORT` once it accepts connections, and stops on SIGINT/SIGTERM.

use std::time::Duration;

use kubeedge_modbus_sim::{Thermometer, serve};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:5020".to_owned();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            _ => {
                eprintln!("usage: modbus-sim [--listen ADDR]");
                return std::process::ExitCode::from(64);
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modbus-sim: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
    println!("modbus-sim listening on {addr}");
    let device = Thermometer::device();
    tokio::spawn(Thermometer::drift(device.clone(), Duration::from_secs(1)));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("modbus-sim: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        r = serve(listener, device) => {
            if let Err(e) = r {
                eprintln!("modbus-sim: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    std::process::ExitCode::SUCCESS
}
