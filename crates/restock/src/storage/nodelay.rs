//! `TCP_NODELAY` on PostgreSQL connections, which sqlx 0.9.0 no longer sets.
//!
//! sqlx 0.8 set it on every TCP connection; 0.9.0 dropped it (sqlx issue 4335; the
//! fix is merged upstream but not released). Without it, a message written in more
//! than one piece waits for the server to acknowledge the first: a TLS connection
//! writes each 16 KiB record separately, so every statement with large parameters
//! (a stock batch's 1,000 items) stalled for the server's delayed ACK, about 40 ms.
//! Stock batches on PostgreSQL over TLS ran at 3,017 items/s against 6,509 without
//! TLS in the same hour.
//!
//! sqlx gives no access to its socket, so each new connection asks the server for
//! its client port, and the socket of this process with that local port gets the
//! option through a duplicate of its descriptor (`pidfd_getfd` on this process,
//! Linux 5.6 and later). A connection whose socket is not found (a proxy that
//! rewrites the address, a Unix socket, a kernel or sandbox without `pidfd_getfd`)
//! keeps working as sqlx made it. Remove this when sqlx sets the option again.

use std::net::TcpStream;

/// Asks the server which port `conn` comes from and sets `TCP_NODELAY` on the
/// socket of this process with that local port and the server's port. Returns
/// whether it was set.
pub(crate) async fn set_on(conn: &mut sqlx::PgConnection) -> sqlx::Result<bool> {
    let ports: (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *conn)
            .await?;
    let (Some(local), Some(server)) = ports else {
        return Ok(false);
    };
    let (Ok(local), Ok(server)) = (u16::try_from(local), u16::try_from(server)) else {
        return Ok(false);
    };
    Ok(socket_by_ports(local, server).is_some_and(|s| s.set_nodelay(true).is_ok()))
}

/// This process's TCP socket from local port `local` to remote port `peer`, as a
/// duplicate of its descriptor (closed when dropped; options set on it are the
/// socket's). `None` where it is not found.
#[cfg(target_os = "linux")]
pub fn socket_by_ports(local: u16, peer: u16) -> Option<TcpStream> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let fds = std::fs::read_dir("/proc/self/fd").ok()?;
    let me = pidfd_open(getpid(), PidfdFlags::empty()).ok()?;
    for entry in fds.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let Ok(dup) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let stream = TcpStream::from(dup);
        if stream.local_addr().is_ok_and(|a| a.port() == local)
            && stream.peer_addr().is_ok_and(|a| a.port() == peer)
        {
            return Some(stream);
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
pub fn socket_by_ports(_local: u16, _peer: u16) -> Option<TcpStream> {
    None
}
