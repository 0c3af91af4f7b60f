//! The connections to Redis: one for commands and writes, one for the log reader's blocking
//! `XREAD` (a blocking read on the shared multiplexed connection would stall every command
//! behind it). Both are redis-rs `ConnectionManager`s created lazily, so a Redis that is down at
//! start-up delays nothing; every call is wrapped in a deadline, so a slow or paused Redis never
//! holds a caller longer than that (a command that timed out may still have run: every write is
//! idempotent or versioned).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::SharedError;
use crate::secret::{Secret, mask_userinfo};

/// How long the reader's `XREAD` blocks on the server.
pub const BLOCK_MS: u64 = 1000;

/// The command and reader connections.
#[derive(Clone)]
pub struct Link {
    cmd: ConnectionManager,
    reader: ConnectionManager,
    /// The URL with its password masked (for messages).
    pub masked: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("url", &self.masked).finish()
    }
}

fn manager(client: redis::Client, response: Duration) -> Result<ConnectionManager, SharedError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config).map_err(SharedError::from_redis)
}

impl Link {
    /// Parses the URL and prepares both connections (nothing is dialled yet). Must run inside
    /// a Tokio runtime.
    pub fn open(url: &Secret) -> Result<Link, SharedError> {
        let masked = mask_userinfo(url.expose());
        let client = redis::Client::open(url.expose()).map_err(|e| {
            SharedError::Config(format!(
                "REDIS_URL {masked}: {}",
                mask_userinfo(&e.to_string())
            ))
        })?;
        let cmd = manager(client.clone(), Duration::from_secs(2))?;
        let reader = manager(client, Duration::from_millis(BLOCK_MS + 2000))?;
        Ok(Link {
            cmd,
            reader,
            masked,
        })
    }

    /// Runs one command (or pipeline) on the command connection within `limit`.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        cmd: &redis::Cmd,
    ) -> Result<T, SharedError> {
        let mut c = self.cmd.clone();
        deadline(limit, cmd.query_async(&mut c)).await
    }

    /// Runs a pipeline on the command connection within `limit`.
    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        pipe: &redis::Pipeline,
    ) -> Result<T, SharedError> {
        let mut c = self.cmd.clone();
        deadline(limit, pipe.query_async(&mut c)).await
    }

    /// Runs a script (loaded again automatically after a Redis restart) within `limit`.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let mut c = self.cmd.clone();
        deadline(limit, inv.invoke_async(&mut c)).await
    }

    /// A blocking read on the reader connection.
    pub async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, SharedError> {
        let mut c = self.reader.clone();
        deadline(
            Duration::from_millis(BLOCK_MS + 2500),
            cmd.query_async(&mut c),
        )
        .await
    }
}

async fn deadline<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, SharedError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SharedError::from_redis(e)),
        Err(_) => Err(SharedError::Timeout(limit.as_millis() as u64)),
    }
}
