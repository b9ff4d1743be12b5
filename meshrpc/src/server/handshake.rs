//! The server's side of the handshake: check the client's preface, send SETTINGS,
//! read the client's SETTINGS.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::status::Code;
use crate::transport::FrameReader;
use crate::wire::{self, Frame, GoAway, Settings, WireError};

/// Why a handshake failed (logged; the peer got a GOAWAY where one made sense).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("i/o during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("expected the client's SETTINGS frame, got {0}")]
    NotSettings(&'static str),
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, code: Code, message: String) {
    let mut buf = bytes::BytesMut::new();
    wire::encode_goaway(&mut buf, &GoAway { last_call_id: 0, code, message });
    let _ = wr.write_all(&buf).await;
    let _ = wr.shutdown().await;
}

/// Runs the handshake. On success returns the frame reader (with anything the client
/// sent after its SETTINGS still buffered) and the client's settings.
pub(crate) async fn accept<R, W>(
    mut rd: R,
    wr: &mut W,
    ours: &Settings,
    max_frame_size: u32,
) -> Result<(FrameReader<R>, Settings), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; wire::PREFACE_LEN];
    rd.read_exact(&mut preface).await?;
    let magic = [preface[0], preface[1], preface[2], preface[3]];
    if magic != wire::MAGIC {
        let e = WireError::BadMagic(magic);
        refuse(wr, Code::InvalidArgument, format!("protocol error: {e}")).await;
        return Err(e.into());
    }
    let version = u16::from_be_bytes([preface[4], preface[5]]);
    if version != wire::VERSION {
        let e = WireError::UnsupportedVersion { got: version, supported: wire::VERSION };
        refuse(wr, Code::Unimplemented, format!("protocol error: {e}")).await;
        return Err(e.into());
    }
    let mut buf = bytes::BytesMut::new();
    wire::encode_settings(&mut buf, ours);
    wr.write_all(&buf).await?;
    let mut reader = FrameReader::new(rd, max_frame_size);
    let first = match reader.next().await {
        Ok(f) => f,
        Err(crate::transport::ReadError::Wire(e)) => {
            refuse(wr, e.to_status().code(), e.to_status().message().to_string()).await;
            return Err(e.into());
        }
        Err(crate::transport::ReadError::Io(e)) => return Err(e.into()),
        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e.to_string()).into()),
    };
    match first {
        Frame::Settings(s) => Ok((reader, s)),
        other => {
            let kind = frame_name(&other);
            refuse(
                wr,
                Code::InvalidArgument,
                format!("protocol error: the first frame must be SETTINGS, got {kind}"),
            )
            .await;
            Err(HandshakeError::NotSettings(kind))
        }
    }
}

pub(crate) fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Request(_) => "REQUEST",
        Frame::Response(_) => "RESPONSE",
        Frame::Cancel { .. } => "CANCEL",
        Frame::Ping(_) => "PING",
        Frame::Pong(_) => "PONG",
        Frame::GoAway(_) => "GOAWAY",
        Frame::Settings(_) => "SETTINGS",
    }
}
