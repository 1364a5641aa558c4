-- abort: delayed, pending or running -> aborted. A delayed or pending task then never runs (its
-- message, if any, is dropped at claim); a running one is cancelled by its consumer, which
-- learns of it from this change.
-- ARGV: prefix, id, now, retention_ms
local task = read_task(ARGV[2])
if not task then return {'gone'} end
if not is_live(task.state) then return {'final', task.state} end
finalize(task, 'aborted', ARGV[3], ARGV[4], false, 'aborted')
return {'aborted', task.state}
