"""Runs Flink SQL queries over a file of clickstream events and prints their rows as JSON lines.

Used by tests/tests/flink.rs to compare the module with Flink 2.x SQL itself. Flink runs in-process
(a local mini-cluster), one task, with a watermark after every record (`pipeline.auto-watermark-interval`
0), so its windows fire exactly when the per-record rule says. The input is read once per query; at its
end Flink fires every window, as the module does when a replay closes them.

    python run_queries.py QUERIES.json > ROWS.jsonl

QUERIES.json is a list of {"name", "events", "watermark_delay_ms", "sql"}: each query reads the JSON lines
of its `events` file as the table `clickstream`, with that watermark delay. Each output line is
{"query": name, "row": {column: value}}, timestamps as epoch milliseconds (UTC).
"""

import datetime
import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

EPOCH = datetime.datetime(1970, 1, 1)


def plain(value):
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    return value


def main():
    with open(sys.argv[1]) as file:
        queries = json.load(file)
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("pipeline.auto-watermark-interval", "0")
    config.set("table.local-time-zone", "UTC")
    for query in queries:
        env.execute_sql("DROP TABLE IF EXISTS clickstream")
        env.execute_sql(f"""
        CREATE TABLE clickstream (
            `timestamp` TIMESTAMP(3), event STRING, user_id STRING, site_id STRING, url STRING,
            on_site_seconds BIGINT, viewed_percent BIGINT,
            WATERMARK FOR `timestamp` AS `timestamp` - INTERVAL '{query["watermark_delay_ms"] / 1000:.3f}' SECOND
        ) WITH (
            'connector' = 'filesystem', 'path' = '{query["events"]}', 'format' = 'json',
            'json.timestamp-format.standard' = 'SQL'
        )""")
        started = time.monotonic()
        # Arrow batches: a row at a time through the Java bridge takes milliseconds.
        frame = env.sql_query(query["sql"]).to_pandas()
        for record in frame.to_dict(orient="records"):
            record = {column: plain(value) for column, value in record.items()}
            print(json.dumps({"query": query["name"], "row": record}))
        print(f"{query['name']}: {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
