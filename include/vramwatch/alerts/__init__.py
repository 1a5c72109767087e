"""The alert stage: messages built from records, delivered by webhook, e-mail and Slack (no Airflow needed)."""
