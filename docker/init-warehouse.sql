-- The warehouse lives beside Airflow's metadata DB on the same server, in its own database.
CREATE DATABASE vramwatch;
