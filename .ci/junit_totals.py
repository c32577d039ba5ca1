"""Sum pytest junit XML reports; print one 'N passed, N failed, N skipped' line per report and in total."""
import sys
import xml.etree.ElementTree as ET

tot = {"passed": 0, "failed": 0, "skipped": 0}
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    n = {"passed": 0, "failed": 0, "skipped": 0}
    for s in suites:
        tests, fail, err, skip = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        n["failed"] += fail + err
        n["skipped"] += skip
        n["passed"] += tests - fail - err - skip
    name = path.rsplit("/", 1)[-1][:-4]
    print(f"{name}: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped")
    for k in tot:
        tot[k] += n[k]
if not sys.argv[1:]:
    print("no test reports")
    sys.exit(1)
print(f"total: {tot['passed']} passed, {tot['failed']} failed, {tot['skipped']} skipped")
sys.exit(1 if tot["failed"] or not tot["passed"] else 0)
