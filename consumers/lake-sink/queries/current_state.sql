-- The current state of a table: the latest row of each key, without the deleted ones (and
-- without rows whose value could not be decoded). A key always goes to the same Kafka
-- partition, so its newest row is the one with the highest offset. Replace {table} with
-- users, applications or app_usage. Used by consumers/lake-sink/scripts/lake_query.py and the
-- integration test.
SELECT * EXCEPT (rn) FROM (
  SELECT *, row_number() OVER (PARTITION BY record_key ORDER BY kafka_offset DESC) AS rn
  FROM {table}
) WHERE rn = 1 AND NOT deleted AND decode_error IS NULL
