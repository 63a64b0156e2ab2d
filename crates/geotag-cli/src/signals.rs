//! How a run ends early: Ctrl-C, or SIGTERM (`kill`, a supervisor). Either
//! way the command returns through its normal path, so the emulator its
//! stack owns is stopped when dropped rather than left running.

pub async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
