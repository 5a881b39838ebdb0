//! `lake-sink maintain`: small-file compaction and vacuum, safe while sinks write.
//!
//! The sink commits every flush as new files per tenant and day, so a table collects many
//! small files. Compaction rewrites the small files of each partition (tenant, day) into one,
//! committing the new file and the removal of the old ones with `dataChange = false` (readers
//! of the change feed see no change). It only ever removes files it read, and it commits only
//! if all of them are still in the table: a sink's concurrent appends never conflict with it,
//! and two compactions racing for the same files end with one winner.
//!
//! Vacuum deletes the files no version newer than the retention period references: files
//! removed by compaction, and files a refused (stale) or interrupted commit wrote. The
//! retention must exceed the longest commit of a running sink, so it may not go under one hour
//! unless `--force` says no sink runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray, new_null_array};
use deltalake::arrow::compute::cast;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Remove};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::DeltaWriter;
use deltalake::{DeltaTable, DeltaTableError, Path};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::columns::{RECORD_DATE, TENANT};

/// What `maintain` does.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainArgs {
    /// Compact the small files of each partition.
    #[arg(long)]
    pub compact: bool,
    /// Delete unreferenced files older than the retention.
    #[arg(long)]
    pub vacuum: bool,
    /// Files under this size are compacted (MiB).
    #[arg(long, default_value_t = 32)]
    pub small_file_mib: u64,
    /// A partition is compacted when it has at least this many small files.
    #[arg(long, default_value_t = 4)]
    pub min_files: usize,
    /// Vacuum keeps what versions of the last this many hours reference (at least 1).
    #[arg(long, default_value_t = 168.0)]
    pub retention_hours: f64,
    /// Allows a retention under one hour: only when no sink writes the tables.
    #[arg(long)]
    pub force: bool,
}

/// What maintenance did to one table.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Maintained {
    /// The table.
    pub table: String,
    /// Partitions compacted.
    pub partitions_compacted: usize,
    /// Files replaced by compaction.
    pub files_removed: usize,
    /// Files compaction wrote.
    pub files_added: usize,
    /// Partitions skipped because another writer removed their files first.
    pub partitions_skipped: usize,
    /// Files vacuum deleted.
    pub files_vacuumed: usize,
}

/// A failed maintenance step.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// Delta failed.
    #[error("table {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// The cause.
        #[source]
        source: DeltaTableError,
    },
    /// The arguments are unsafe or empty.
    #[error("{0}")]
    Usage(String),
}

/// Checks the arguments before anything is opened.
///
/// # Errors
/// [`MaintainError::Usage`].
pub fn check(args: &MaintainArgs) -> Result<(), MaintainError> {
    if !args.compact && !args.vacuum {
        return Err(MaintainError::Usage(
            "say --compact, --vacuum or both".into(),
        ));
    }
    if !args.retention_hours.is_finite() || args.retention_hours < 0.0 {
        return Err(MaintainError::Usage(
            "--retention-hours must be 0 or more".into(),
        ));
    }
    if args.retention_hours < 1.0 && !args.force {
        return Err(MaintainError::Usage(
            "--retention-hours under 1 could delete the files of a commit in flight: \
             add --force only when no sink writes the tables"
                .into(),
        ));
    }
    if args.min_files < 2 {
        return Err(MaintainError::Usage(
            "--min-files must be at least 2".into(),
        ));
    }
    Ok(())
}

/// Compacts and/or vacuums `table`.
///
/// # Errors
/// [`MaintainError::Delta`] when the table cannot be read or written.
pub async fn maintain(
    name: &str,
    mut table: DeltaTable,
    args: &MaintainArgs,
) -> Result<Maintained, MaintainError> {
    let fail = |source| MaintainError::Delta {
        table: name.to_owned(),
        source,
    };
    let mut done = Maintained {
        table: name.to_owned(),
        ..Maintained::default()
    };
    if args.compact {
        compact(&mut table, args, &mut done).await.map_err(fail)?;
    }
    if args.vacuum {
        table.update_incremental(None).await.map_err(fail)?;
        let millis = (args.retention_hours * 3_600_000.0) as i64;
        let (_, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(chrono::Duration::milliseconds(millis))
            .with_enforce_retention_duration(false)
            .await
            .map_err(fail)?;
        done.files_vacuumed = metrics.files_deleted.len();
    }
    Ok(done)
}

/// Maintains every table under the configured location; a table not created yet is skipped.
///
/// # Errors
/// [`MaintainError::Delta`] for the first table that fails.
pub async fn maintain_all(
    lake: &crate::config::LakeConfig,
    args: &MaintainArgs,
) -> Result<Vec<Maintained>, MaintainError> {
    crate::storage::register();
    let mut done = Vec::new();
    for name in crate::TABLES {
        let fail = |source| MaintainError::Delta {
            table: name.to_owned(),
            source,
        };
        let options = lake.storage_options.clone().into_iter().collect();
        let mut table = deltalake::DeltaTableBuilder::from_url(lake.table_url(name))
            .and_then(|b| b.with_storage_options(options).build())
            .map_err(fail)?;
        match table.load().await {
            Ok(()) => done.push(maintain(name, table, args).await?),
            Err(DeltaTableError::NotATable(_)) => {
                tracing::info!(table = name, "no table yet: skipped");
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(done)
}

/// One file to compact.
struct Small {
    path: String,
    remove: Remove,
}

async fn compact(
    table: &mut DeltaTable,
    args: &MaintainArgs,
    done: &mut Maintained,
) -> Result<(), DeltaTableError> {
    table.update_incremental(None).await?;
    let limit = i64::try_from(args.small_file_mib * 1024 * 1024).unwrap_or(i64::MAX);
    let mut groups: BTreeMap<Vec<(String, Option<String>)>, Vec<Small>> = BTreeMap::new();
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await?;
    for f in files.iter().filter(|f| f.size() < limit) {
        let mut key: Vec<_> = f.partition_values_map().into_iter().collect();
        key.sort();
        groups.entry(key).or_default().push(Small {
            path: f.path().into_owned(),
            remove: f.remove_action(false),
        });
    }
    drop(files);
    for (values, smalls) in groups {
        if smalls.len() < args.min_files {
            continue;
        }
        if compact_one(table, &values, &smalls, limit).await? {
            done.partitions_compacted += 1;
            done.files_removed += smalls.len();
            done.files_added += 1;
        } else {
            done.partitions_skipped += 1;
        }
    }
    Ok(())
}

/// Rewrites one partition's small files as one; false when another writer removed one of
/// them first.
async fn compact_one(
    table: &mut DeltaTable,
    values: &[(String, Option<String>)],
    smalls: &[Small],
    target_size: i64,
) -> Result<bool, DeltaTableError> {
    let mut writer = crate::table::writer_for(table)?;
    let schema = writer.arrow_schema();
    let store = table.object_store();
    for small in smalls {
        let bytes = store
            .get(&Path::from_url_path(&small.path)?)
            .await?
            .bytes()
            .await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            let n = batch.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let partition_value = values
                    .iter()
                    .find(|(k, _)| k == field.name())
                    .map(|(_, v)| v.as_deref());
                let column: ArrayRef = match (field.name().as_str(), partition_value) {
                    (TENANT, Some(v)) => Arc::new(StringArray::from(vec![v; n])),
                    (RECORD_DATE, Some(v)) => {
                        let day = v.and_then(parse_day);
                        Arc::new(Date32Array::from(vec![day; n]))
                    }
                    _ => match batch.column_by_name(field.name()) {
                        Some(c) if c.data_type() == field.data_type() => c.clone(),
                        Some(c) => cast(c, field.data_type())?,
                        // A file written before the column was added.
                        None => new_null_array(field.data_type(), n),
                    },
                };
                columns.push(column);
            }
            writer
                .write(RecordBatch::try_new(schema.clone(), columns)?)
                .await?;
        }
    }
    let mut adds = writer.flush().await?;
    for add in &mut adds {
        add.data_change = false;
    }
    let removed: HashSet<&str> = smalls.iter().map(|s| s.path.as_str()).collect();
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(smalls.iter().map(|s| Action::Remove(s.remove.clone())));
    loop {
        let still: HashSet<String> = table
            .get_active_add_actions_by_partitions(&[])
            .map_ok(|f| f.path().into_owned())
            .try_collect()
            .await?;
        if !removed.iter().all(|p| still.contains(*p)) {
            return Ok(false);
        }
        let committed = CommitBuilder::from(CommitProperties::default().with_max_retries(0))
            .with_actions(actions.clone())
            .build(
                Some(table.snapshot()?),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size,
                },
            )
            .await;
        match committed {
            Ok(_) => {
                table.update_incremental(None).await?;
                return Ok(true);
            }
            Err(
                DeltaTableError::Transaction {
                    source:
                        TransactionError::MaxCommitAttempts(_)
                        | TransactionError::VersionAlreadyExists(_),
                }
                | DeltaTableError::VersionAlreadyExists(_),
            ) => {
                table.update_incremental(None).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `YYYY-MM-DD` as days since the Unix epoch.
fn parse_day(text: &str) -> Option<i32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, format).ok()?;
    // 2,440,588 is the Julian day number of 1970-01-01.
    Some(date.to_julian_day() - 2_440_588)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-12-06"), Some(20_793));
        assert_eq!(parse_day("not a day"), None);
    }

    #[test]
    fn unsafe_or_empty_arguments_are_refused() {
        let args = MaintainArgs {
            compact: false,
            vacuum: false,
            small_file_mib: 32,
            min_files: 4,
            retention_hours: 168.0,
            force: false,
        };
        assert!(check(&args).is_err());
        let vacuum_now = MaintainArgs {
            vacuum: true,
            retention_hours: 0.0,
            ..args.clone()
        };
        assert!(
            check(&vacuum_now)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        assert!(
            check(&MaintainArgs {
                force: true,
                ..vacuum_now
            })
            .is_ok()
        );
    }
}
