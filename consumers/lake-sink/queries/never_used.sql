-- The five applications with the most users who may use them but never did: for each
-- application's current state, the current users its access control lets in (every user of
-- the tenant without a group rule; a member of any listed group for ANY_GROUP, of every listed
-- group for ALL_GROUPS, as the transformer's authorized_user_count counts them), less those
-- with any recorded access in app_usage. Each of the three tables is read at its current state
-- (queries/current_state.sql).
WITH users_now AS (
  SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY record_key ORDER BY kafka_offset DESC) AS rn
    FROM users
  ) WHERE rn = 1 AND NOT deleted AND decode_error IS NULL
),
apps_now AS (
  SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY record_key ORDER BY kafka_offset DESC) AS rn
    FROM applications
  ) WHERE rn = 1 AND NOT deleted AND decode_error IS NULL
),
used AS (
  SELECT DISTINCT tenant_id, application_id, user_id
  FROM app_usage WHERE NOT deleted AND decode_error IS NULL
),
may_use AS (
  SELECT a.tenant_id, a.application_id, a.name, u.user_id
  FROM apps_now a JOIN users_now u ON u.tenant_id = a.tenant_id
  WHERE a.access_control_group_type IS NULL
     OR (a.access_control_group_type = 'ANY_GROUP'
         AND array_has_any(u.access_group_ids, a.access_control_group_ids))
     OR (a.access_control_group_type = 'ALL_GROUPS'
         AND array_has_all(u.access_group_ids, a.access_control_group_ids))
)
SELECT m.tenant_id AS tenant, m.name AS application, count(*) AS may_use_never_did
FROM may_use m LEFT JOIN used s
  ON s.tenant_id = m.tenant_id AND s.application_id = m.application_id AND s.user_id = m.user_id
WHERE s.user_id IS NULL
GROUP BY m.tenant_id, m.name
ORDER BY may_use_never_did DESC, application
LIMIT 5
