//! The broker at `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`), with names unique
//! to one test and deleted when its [`Topology`] drops.

use std::collections::VecDeque;
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use logship_runtime::Envelope;
use logship_runtime::amqp;

/// Publishes in flight at most.
const WINDOW: usize = 1000;

/// The broker URL tests use.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or run) uses.
pub fn unique(label: &str) -> String {
    format!("t.{label}.{}.{:08x}", std::process::id(), fastrand::u32(..))
}

/// A test's exchange and queues: everything the daemons may declare for them. Deleted on drop.
pub struct Topology {
    pub exchange: String,
    /// Collector queues (`broker.queue`); in a partitioned group, the group's name.
    pub queues: Vec<String>,
    /// Partitions of every queue's group (`broker.partitions`); 1: plain queues.
    pub partitions: u32,
}

impl Topology {
    /// An exchange and `queues` collector queues, all uniquely named.
    pub fn new(label: &str, queues: usize) -> Topology {
        let exchange = unique(label);
        let queues = (0..queues).map(|i| format!("{exchange}.q{i}")).collect();
        Topology {
            exchange,
            queues,
            partitions: 1,
        }
    }

    /// An exchange and one partitioned group of `partitions` queues: `queues[0]` is the group's
    /// name, and its hash exchange and partition queues are deleted with the rest.
    pub fn partitioned(label: &str, partitions: u32) -> Topology {
        let mut topology = Topology::new(label, 1);
        topology.partitions = partitions;
        topology
    }

    /// The queue of partition `index` of the group `queues[0]`.
    pub fn partition_queue(&self, index: u32) -> String {
        format!("{}.{index}", self.queues[0])
    }

    /// The dead-letter queue the collector declares for queue `i`.
    pub fn dead_letter_queue(&self, i: usize) -> String {
        format!("{}.dead-letter", self.queues[i])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut exchanges = vec![
            self.exchange.clone(),
            format!("{}.dead-letter", self.exchange),
        ];
        let mut queues = self.queues.clone();
        // Every group's hash exchange and all its partitions, whatever N its members were
        // given (a member refused for another N declares nothing).
        for group in self.queues.iter().filter(|_| self.partitions > 1) {
            exchanges.push(format!("{group}.hash"));
            queues.extend((0..self.partitions).map(|i| format!("{group}.{i}")));
        }
        let with_dead_letters: Vec<String> =
            queues.iter().map(|q| format!("{q}.dead-letter")).collect();
        queues.extend(with_dead_letters);
        // Drop may run inside a test's runtime: clean up from a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    for queue in &queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), Default::default())
                            .await;
                    }
                    for exchange in &exchanges {
                        let _ = channel
                            .exchange_delete(exchange.as_str().into(), Default::default())
                            .await;
                    }
                }
                let _ = connection.close(200, "".into()).await;
            });
        })
        .join();
    }
}

/// A connection with a channel in confirm mode.
pub struct Broker {
    pub connection: Connection,
    channel: Channel,
}

impl Broker {
    /// Connects to [`amqp_url`].
    pub async fn connect() -> Broker {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect(
                "test broker reachable at AMQP_URL (see README: bash scripts/ensure-rabbitmq.sh)",
            );
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Broker {
            connection,
            channel,
        }
    }

    /// Declares the durable fanout exchange, as the daemons do.
    pub async fn declare_exchange(&self, exchange: &str) {
        let options = lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                options,
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
    }

    /// Publishes envelopes as the agent does and checks every confirm is a clean ack.
    pub async fn publish(&self, exchange: &str, envelopes: &[Envelope]) {
        let bodies: Vec<(Vec<u8>, String)> = envelopes
            .iter()
            .map(|e| (e.to_json(), e.message_id()))
            .collect();
        self.publish_bodies(exchange, &bodies).await;
    }

    /// Publishes arbitrary bodies (for malformed messages), each with a message id.
    pub async fn publish_bodies(&self, exchange: &str, bodies: &[(Vec<u8>, String)]) {
        // Collected first: a lazy iterator over `bodies` would keep this future from being `Send`.
        let messages: Vec<Outgoing> = bodies
            .iter()
            .map(|(body, id)| Outgoing {
                routing_key: String::new(),
                message_id: id.clone(),
                body: body.clone(),
            })
            .collect();
        publish_confirmed(&self.channel, exchange, WINDOW, "logship-tests", messages).await;
    }

    /// Waits until `queue` exists (a collector declared it), or panics after 10 s.
    pub async fn wait_declared(&self, queue: &str) {
        for _ in 0..200 {
            if self.queue_len(queue).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{queue} was never declared");
    }

    /// Messages ready in a queue (not unacked ones); `None` if the queue does not exist.
    pub async fn queue_len(&self, queue: &str) -> Option<u32> {
        queue_len(&self.connection, queue).await
    }

    /// Declares `queue` and its dead-letter route exactly as the collector of the release before
    /// issue 16 did: no `x-single-active-consumer`, and a classic `<queue>.dead-letter` whatever
    /// the queue's type (`quorum` or not).
    pub async fn declare_as_previous_release(&self, exchange: &str, queue: &str, quorum: bool) {
        use lapin::types::AMQPValue;
        self.declare_exchange(exchange).await;
        let dlx = format!("{exchange}.dead-letter");
        self.channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Direct,
                amqp::durable_exchange(),
                FieldTable::default(),
            )
            .await
            .expect("declare dead-letter exchange");
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dead_queue = format!("{queue}.dead-letter");
        self.channel
            .queue_declare(dead_queue.as_str().into(), durable, FieldTable::default())
            .await
            .expect("declare classic dead-letter queue");
        self.bind(&dead_queue, &dlx, queue).await;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.into()),
        );
        if quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        self.channel
            .queue_declare(queue.into(), durable, arguments)
            .await
            .expect("declare queue as the previous release");
        self.bind(queue, exchange, "").await;
    }

    /// Declares a durable queue bound to `exchange`, to read what the agent publishes.
    pub async fn bind_queue(&self, exchange: &str, queue: &str) {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("declare queue");
        self.bind(queue, exchange, "").await;
    }

    /// Declares a queue bound to `exchange` that is always full and refuses what comes
    /// (`x-max-length` 0, `x-overflow = reject-publish`): the broker nacks every publish routed
    /// to it, though the exchange's other queues take it.
    pub async fn bind_full_queue(&self, exchange: &str, queue: &str) {
        use lapin::types::AMQPValue;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        self.channel
            .queue_declare(queue.into(), QueueDeclareOptions::default(), arguments)
            .await
            .expect("declare a full queue");
        self.bind(queue, exchange, "").await;
    }

    /// Deletes `queue`.
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), Default::default())
            .await
            .unwrap_or_else(|err| panic!("delete {queue}: {err}"));
    }

    /// Binds `queue` to `exchange` with `routing_key`.
    async fn bind(&self, queue: &str, exchange: &str, routing_key: &str) {
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|err| panic!("bind {queue} to {exchange}: {err}"));
    }

    /// Takes one message from `queue` (acked), if there is one.
    pub async fn get(&self, queue: &str) -> Option<Vec<u8>> {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        let message = self
            .channel
            .basic_get(queue.into(), options)
            .await
            .expect("basic.get")?;
        Some(message.delivery.data.clone())
    }

    /// Waits until a queue holds `n` ready messages.
    pub async fn wait_queue_len(&self, queue: &str, n: u32, timeout: Duration) -> u32 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let len = self.queue_len(queue).await.unwrap_or(0);
            if len >= n || std::time::Instant::now() > deadline {
                return len;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Messages ready in `queue` on `connection` (not unacked ones); `None` if the queue does not
/// exist.
pub async fn queue_len(connection: &Connection, queue: &str) -> Option<u32> {
    // A failed passive declare closes its channel: use a fresh one.
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = channel.close(200, "".into()).await;
    count
}

/// One message for [`publish_confirmed`].
pub struct Outgoing {
    pub routing_key: String,
    pub message_id: String,
    pub body: Vec<u8>,
}

impl Outgoing {
    /// `envelope` as the agent sends it, under `routing_key`.
    pub fn envelope(envelope: &Envelope, routing_key: &str) -> Outgoing {
        Outgoing {
            routing_key: routing_key.to_string(),
            message_id: envelope.message_id(),
            body: envelope.to_json(),
        }
    }
}

/// Publishes `messages` in order as the agent does (persistent, with `app_id`) on `channel`,
/// which is in confirm mode, with at most `window` confirms outstanding; panics unless the
/// broker routes and confirms every one.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    window: usize,
    app_id: &str,
    messages: impl IntoIterator<Item = Outgoing>,
) {
    let mut pending = VecDeque::new();
    for message in messages {
        let confirm = amqp::publish(
            channel,
            exchange,
            &message.routing_key,
            &message.message_id,
            &message.body,
            app_id,
            None,
        )
        .await
        .expect("publish");
        pending.push_back(confirm);
        if pending.len() >= window
            && let Some(confirm) = pending.pop_front()
        {
            check(confirm.await.expect("confirm"));
        }
    }
    for confirm in pending {
        check(confirm.await.expect("confirm"));
    }
}

fn check(confirmation: Confirmation) {
    assert_eq!(
        confirmation,
        Confirmation::Ack(None),
        "the broker must route and confirm every test message"
    );
}
