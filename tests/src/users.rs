//! Throwaway users on the shared broker, made with `rabbitmqctl` and deleted when their
//! [`User`] drops (also when the test fails).

use std::process::Command;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

use crate::broker::amqp_url;

/// A broker user of one test, with its permissions on the default vhost.
pub struct User {
    pub name: String,
    pub password: String,
}

impl User {
    /// Creates `name` with a random password and the permission regexes `configure`, `write`
    /// and `read` (`""`: none) on vhost `/`.
    pub fn create(name: &str, configure: &str, write: &str, read: &str) -> User {
        let user = User {
            name: name.to_string(),
            password: format!("pw-{:016x}", fastrand::u64(..)),
        };
        ctl(&["add_user", &user.name, &user.password]);
        user.set_permissions(configure, write, read);
        user
    }

    /// Replaces the user's permissions on vhost `/`.
    pub fn set_permissions(&self, configure: &str, write: &str, read: &str) {
        ctl(&[
            "set_permissions",
            "-p",
            "/",
            &self.name,
            configure,
            write,
            read,
        ]);
    }

    /// [`amqp_url`] with this user's credentials.
    pub fn url(&self) -> String {
        let url = amqp_url();
        let rest = url
            .split_once('@')
            .map_or(url.trim_start_matches("amqp://"), |(_, rest)| rest);
        format!("amqp://{}:{}@{rest}", self.name, self.password)
    }

    /// Publishes one body to `exchange` as this user on a fresh connection, with the `user_id`
    /// property `user_id`; returns the confirm, or the broker's error (a refused publish closes
    /// the channel).
    pub async fn publish(
        &self,
        exchange: &str,
        body: &[u8],
        user_id: &str,
    ) -> Result<Confirmation, lapin::Error> {
        publish_as(&self.url(), exchange, body, user_id).await
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// Publishes one body to `exchange` over a fresh connection to `url`, with the `user_id`
/// property `user_id`, and waits for its confirm.
pub async fn publish_as(
    url: &str,
    exchange: &str,
    body: &[u8],
    user_id: &str,
) -> Result<Confirmation, lapin::Error> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("raw-{:016x}", fastrand::u64(..)).into())
        .with_user_id(user_id.into());
    let result = async {
        channel
            .basic_publish(
                exchange.into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await
    }
    .await;
    let _ = connection.close(200, "".into()).await;
    result
}

fn ctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the shared broker is local)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
