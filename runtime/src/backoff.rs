//! How long to wait before trying the broker (or a failing disk) again.

use std::time::Duration;

use logship_config::Broker;

/// Reconnect delays: exponential from `reconnect_delay` to `reconnect_max_delay`, each drawn
/// at random from its upper half so that many hosts don't reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff for these broker settings.
    pub fn new(broker: &Broker) -> Backoff {
        Backoff {
            initial: broker.reconnect_delay,
            max: broker.reconnect_max_delay,
            current: broker.reconnect_delay,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
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
}
