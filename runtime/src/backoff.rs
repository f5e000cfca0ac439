//! How long to wait before trying the broker (or a failing disk) again.

use std::time::Duration;

use logship_config::Broker;

/// Delays between attempts: exponential from an initial delay up to a ceiling, starting over
/// after a success. With jitter (the broker's reconnects, the collector's write outages) each
/// delay is drawn at random from its upper half, so that many hosts don't retry in lockstep;
/// without it (one process retrying its own disk) each is exactly the doubled one.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays from `initial` up to `max`, with jitter.
    pub fn between(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
            jitter: true,
        }
    }

    /// A backoff for these broker settings: `reconnect_delay` up to `reconnect_max_delay`, with
    /// jitter.
    pub fn new(broker: &Broker) -> Backoff {
        Backoff::between(broker.reconnect_delay, broker.reconnect_max_delay)
    }

    /// The same delays, each exactly the doubled one (no other process retries against the
    /// same thing).
    pub fn without_jitter(mut self) -> Backoff {
        self.jitter = false;
        self
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        if !self.jitter {
            return ceiling;
        }
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use logship_config::broker::RawBroker;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let broker = RawBroker {
            uris: vec!["amqp://h".into()],
            exchange: None,
            heartbeat: None,
            connection_name: Some("t".into()),
            connect_timeout: None,
            reconnect_delay: Some("100ms".into()),
            reconnect_max_delay: Some("1s".into()),
            password_file: None,
            tls: None,
            queue_type: None,
            queue: None,
            prefetch: None,
            dead_letter_exchange: None,
            dead_letter_max_bytes: None,
            partitions: None,
            partition: None,
        }
        .validate_common("test")
        .unwrap();
        let mut backoff = Backoff::new(&broker);
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn without_jitter_each_delay_is_the_doubled_one() {
        let mut backoff =
            Backoff::between(Duration::from_millis(100), Duration::from_secs(5)).without_jitter();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
