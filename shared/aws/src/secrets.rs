//! [`SecretSource`] on AWS Secrets Manager. The value never appears in an
//! error or a log line; only the secret's id does.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use stevedore_domain::ports::{Secret, SecretSource};
use stevedore_domain::{Error, Result};

use crate::errors::classify;

pub struct SecretsManagerSource {
    client: Client,
}

impl SecretsManagerSource {
    pub fn new(client: Client) -> Self {
        SecretsManagerSource { client }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk))
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret(&self, id: &str) -> Result<Secret> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| classify("GetSecretValue", &e))?;
        match out.secret_string() {
            Some(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
            _ => Err(Error::configuration(format!(
                "secret {id} has no string value: store the value as plain text"
            ))),
        }
    }
}
