import threading, time
from django.db import connection

def test_after(transactional_db):
    time.sleep(1)
    with connection.cursor() as c:
        c.execute("SELECT pid, state, left(query, 120), backend_start FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        print("PGACT", c.fetchall())
    print("THREADS", [t.name for t in threading.enumerate()])
