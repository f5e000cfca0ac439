//! Publishes stdin's lines as logship envelopes, with confirms: a stand-in agent for demos and
//! for checking a collector by hand.
//!
//! `send_lines AMQP_URL EXCHANGE HOST PATH < lines`

use std::io::BufRead as _;

use lapin::options::ConfirmSelectOptions;
use lapin::{Confirmation, Connection, ConnectionProperties};
use logship_runtime::amqp;
use logship_runtime::{Envelope, FileId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, exchange, host, path] = args.as_slice() else {
        return Err("usage: send_lines AMQP_URL EXCHANGE HOST PATH < lines".into());
    };
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // A made-up identity: one per run, so lines sent again are new lines, not duplicates.
    let file = FileId {
        dev: 0,
        ino: u64::from(std::process::id()),
        fp: fastrand::u64(..),
    };
    let mut offset = 0;
    let mut sent = 0;
    for line in std::io::stdin().lock().split(b'\n') {
        let line = line?;
        let envelope = Envelope {
            host: host.clone(),
            path: path.clone(),
            file,
            generation: 0,
            offset,
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64,
            line,
            fields: Default::default(),
            kind: Default::default(),
        };
        offset += envelope.line.len() as u64 + 1;
        let confirmation = amqp::publish(
            &channel,
            exchange,
            "",
            &envelope.message_id(),
            &envelope.to_json(),
            "logship-send-lines",
            None,
        )
        .await?
        .await?;
        if confirmation != Confirmation::Ack(None) {
            return Err(format!(
                "line at offset {} not delivered: {confirmation:?}",
                envelope.offset
            )
            .into());
        }
        sent += 1;
    }
    eprintln!("sent {sent} lines");
    connection.close(200, "done".into()).await?;
    Ok(())
}
