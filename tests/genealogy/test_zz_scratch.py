import pytest
from genealogy import queries as q
pytestmark = pytest.mark.django_db
def test_scratch(thread):
    t = q.trace_backward(thread[ "WVGZZZE2ZSP000101"])
    for n in t.nodes: print(n)
    print(t.segments)
    print(len(t.edges))
    f = q.trace_forward(thread["CC-260303-001"], start_m=1510, end_m=1525)
    for n in f.nodes: print(n)
    s = q.recall_scope(unit=thread["CC-260303-001"], start_m=1510, end_m=1525)
    print(s)
    print(q.unit_timeline(thread["CC-260303-001"]))
