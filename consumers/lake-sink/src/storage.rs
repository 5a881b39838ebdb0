//! Cloud table locations: `s3://` (and `s3a://`), `gs://`, `az://` (`abfs://`, `abfss://`)
//! through `object_store`'s own clients, registered with deltalake for those schemes. The
//! credentials come from the environment the way each builder's `from_env` reads it
//! (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`, ...),
//! and `lake.storage_options` add or override settings by their `object_store` names.
//!
//! Commits use the default log store, which writes each log entry with put-if-absent: on S3
//! that is a conditional write, which AWS S3 and recent S3-compatible stores support (set
//! `aws_conditional_put` where a store needs it named).

use std::str::FromStr;
use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use url::Url;

/// Builds the client of one cloud location.
#[derive(Debug, Clone, Copy)]
struct Cloud;

fn option_error(url: &Url, key: &str) -> DeltaTableError {
    DeltaTableError::Generic(format!("{url}: unknown storage option `{key}`"))
}

impl ObjectStoreFactory for Cloud {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store: ObjectStoreRef = match url.scheme() {
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
                for (k, v) in config.raw() {
                    let key = AmazonS3ConfigKey::from_str(k).map_err(|_| option_error(url, k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build()?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
                for (k, v) in config.raw() {
                    let key = GoogleConfigKey::from_str(k).map_err(|_| option_error(url, k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build()?)
            }
            _ => {
                let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
                for (k, v) in config.raw() {
                    let key = AzureConfigKey::from_str(k).map_err(|_| option_error(url, k))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build()?)
            }
        };
        let path = Path::parse(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok((store, path))
    }
}

impl LogStoreFactory for Cloud {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the cloud schemes with deltalake (once per process).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3", "s3a", "gs", "az", "abfs", "abfss"] {
            let Ok(url) = Url::parse(&format!("{scheme}://")) else {
                continue;
            };
            object_store_factories().insert(url.clone(), Arc::new(Cloud));
            logstore_factories().insert(url, Arc::new(Cloud));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_get_a_store_without_contacting_anything() {
        register();
        let config = StorageConfig::default();
        let s3 = Url::parse("s3://bucket/usage/users/").unwrap();
        let (_, path) = Cloud.parse_url_opts(&s3, &config).unwrap();
        assert_eq!(path.as_ref(), "usage/users");
        let bad = StorageConfig::parse_options([("no_such_option", "x")]).unwrap();
        let err = Cloud.parse_url_opts(&s3, &bad).unwrap_err().to_string();
        assert!(err.contains("no_such_option"), "{err}");
        assert!(object_store_factories().contains_key(&Url::parse("gs://").unwrap()));
    }
}
