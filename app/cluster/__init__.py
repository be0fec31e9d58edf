"""Several replicas of the dashboard: what they share and how they agree.

One process (no ``cluster.redis_url``) keeps everything in memory, as it always did.
With Redis configured, the replicas share:

* the database (MariaDB Galera): everything durable, plus each replica's heartbeat
  (:mod:`app.cluster.replicas`) and the lease that makes one replica at a time run the
  background duties (:mod:`app.cluster.duties`);
* Redis pub/sub (:mod:`app.cluster.bus`): live messages, console revocations, inventory
  changes, which every replica must hear at once;
* Redis keys (:mod:`app.cluster.census`): open console sessions and connection counts per
  replica, so that limits and the Sessions page count the whole cluster.

:mod:`app.cluster.node` builds the right pieces for the configuration.
"""
