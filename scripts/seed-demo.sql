-- The reference table: 13 columns covering the common Redshift types.
-- psql -v rows=N -f scripts/seed-demo.sql
DROP TABLE IF EXISTS demo_orders;
CREATE TABLE demo_orders (
  order_id      bigint PRIMARY KEY,
  customer_id   integer NOT NULL,
  quantity      smallint,
  amount        numeric(18,4),
  discount      real,
  score         double precision,
  is_paid       boolean,
  status        char(8),
  customer_name varchar(64),
  note          text,
  order_date    date,
  created_at    timestamp,
  updated_at    timestamptz
);
INSERT INTO demo_orders
SELECT i::bigint,
       (i * 7919) % 100000,
       CASE WHEN i % 20 = 0 THEN NULL ELSE (i % 50)::smallint END,
       ((i * 104729) % 10000000)::numeric / 100,
       (i % 7) / 10.0,
       (i % 1000) * 1.5,
       i % 3 <> 0,
       (ARRAY['new','paid','shipped','closed'])[1 + i % 4],
       'customer ' || (i * 31) % 100000,
       CASE WHEN i % 10 = 0 THEN NULL ELSE md5(i::text) END,
       date '2020-01-01' + (i % 1500)::int,
       timestamp '2020-01-01 00:00:00' + (i || ' seconds')::interval + ((i % 1000) || ' microseconds')::interval,
       timestamptz '2020-01-01 00:00:00+00' + (i * 3 || ' seconds')::interval
FROM generate_series(1::bigint, :rows) AS i;
ANALYZE demo_orders;
