//! Partitioned collector groups: `broker.partitions` and `broker.partition`, and the broker
//! names a group derives from `broker.queue`.
//!
//! A group of N > 1 members shares one consistent-hash exchange `<queue>.hash` (bound to the
//! fanout exchange) and N durable queues `<queue>.0` ... `<queue>.<N-1>`, each bound to it with
//! weight `"1"`; member `i` consumes `<queue>.<i>`. The agents' routing key is their host, so
//! every line of a host lands in one partition.
//!
//! Invariants:
//! - Every member derives the same names from (`broker.queue`, `broker.partitions`), and every
//!   member declares all N queues, so a host's partition depends only on N, never on which
//!   members happen to be running.
//! - `broker.partitions = 1` (the default) is today's single queue `<queue>`: none of these
//!   names is used.

use crate::broker::check_name;
use crate::error::KeyError;

/// Partitions a group may have at most: every member declares every partition's queue (and its
/// dead-letter queue) on each connect, so N is kept to what a broker declares in a blink.
pub const MAX_PARTITIONS: u32 = 1024;

/// This collector's place in a partitioned group (`broker.partitions` > 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Queues in the group, at least 2 and at most [`MAX_PARTITIONS`].
    pub count: u32,
    /// The partition this collector consumes, below `count`.
    pub index: u32,
}

impl Partition {
    /// Validates `broker.partitions` and `broker.partition` for a group named after `queue`
    /// (already checked); `None` for a single queue.
    pub fn from_raw(
        queue: &str,
        partitions: Option<u32>,
        partition: Option<u32>,
    ) -> Result<Option<Partition>, KeyError> {
        let count = partitions.unwrap_or(1);
        if count == 0 {
            return Err(KeyError::new("broker.partitions", "must be at least 1"));
        }
        if count > MAX_PARTITIONS {
            return Err(KeyError::new(
                "broker.partitions",
                format!("{count} is above the maximum of {MAX_PARTITIONS}"),
            ));
        }
        let index = match (count, partition) {
            (1, None) => return Ok(None),
            (1, Some(index)) => {
                return Err(KeyError::new(
                    "broker.partition",
                    format!(
                        "{index} is set but broker.partitions is 1; set broker.partitions for a partitioned group, or remove broker.partition"
                    ),
                ));
            }
            (_, None) => {
                return Err(KeyError::new(
                    "broker.partition",
                    format!(
                        "missing key (required when broker.partitions is {count}: 0 to {})",
                        count - 1
                    ),
                ));
            }
            (_, Some(index)) if index >= count => {
                return Err(KeyError::new(
                    "broker.partition",
                    format!(
                        "{index} is out of range: broker.partitions is {count}, so 0 to {}",
                        count - 1
                    ),
                ));
            }
            (_, Some(index)) => index,
        };
        // The longest names the group declares must still be valid broker names.
        check_name("broker.queue", &hash_exchange(queue))?;
        check_name("broker.queue", &queue_name(queue, count - 1))?;
        Ok(Some(Partition { count, index }))
    }
}

/// The consistent-hash exchange of the group named `queue`.
pub fn hash_exchange(queue: &str) -> String {
    format!("{queue}.hash")
}

/// The queue of partition `index` of the group named `queue`.
pub fn queue_name(queue: &str, index: u32) -> String {
    format!("{queue}.{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(partitions: Option<u32>, partition: Option<u32>) -> String {
        Partition::from_raw("logs.archive", partitions, partition)
            .unwrap_err()
            .key
    }

    #[test]
    fn one_partition_is_the_single_queue() {
        assert_eq!(Partition::from_raw("q", None, None), Ok(None));
        assert_eq!(Partition::from_raw("q", Some(1), None), Ok(None));
    }

    #[test]
    fn a_member_names_its_partition() {
        assert_eq!(
            Partition::from_raw("q", Some(4), Some(2)),
            Ok(Some(Partition { count: 4, index: 2 }))
        );
        assert_eq!(
            Partition::from_raw("q", Some(2), Some(0)),
            Ok(Some(Partition { count: 2, index: 0 }))
        );
        assert_eq!(hash_exchange("logs.archive"), "logs.archive.hash");
        assert_eq!(queue_name("logs.archive", 3), "logs.archive.3");
    }

    #[test]
    fn zero_or_too_many_partitions_name_broker_partitions() {
        assert_eq!(key_of(Some(0), None), "broker.partitions");
        assert_eq!(key_of(Some(0), Some(0)), "broker.partitions");
        assert_eq!(
            key_of(Some(MAX_PARTITIONS + 1), Some(0)),
            "broker.partitions"
        );
    }

    #[test]
    fn a_missing_or_out_of_range_partition_names_broker_partition() {
        let err = Partition::from_raw("q", Some(4), None).unwrap_err();
        assert_eq!(err.key, "broker.partition");
        assert!(err.problem.starts_with("missing key"), "{}", err.problem);
        let err = Partition::from_raw("q", Some(4), Some(4)).unwrap_err();
        assert_eq!(err.key, "broker.partition");
        assert!(err.problem.contains("0 to 3"), "{}", err.problem);
        assert_eq!(key_of(Some(2), Some(7)), "broker.partition");
    }

    #[test]
    fn a_partition_without_partitions_is_refused() {
        assert_eq!(key_of(None, Some(0)), "broker.partition");
        assert_eq!(key_of(Some(1), Some(0)), "broker.partition");
    }

    #[test]
    fn derived_names_must_fit_the_broker() {
        let long = "q".repeat(252);
        let err = Partition::from_raw(&long, Some(2), Some(0)).unwrap_err();
        assert_eq!(err.key, "broker.queue");
    }
}
