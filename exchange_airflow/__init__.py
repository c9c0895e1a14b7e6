"""The Exchanges view: a read-only Airflow 3 plugin for IG officers and auditors.

Airflow lives only here; the `exchange` library it reads from never imports Airflow."""
