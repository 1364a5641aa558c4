-- abort: pending or running -> aborted. A pending task then never runs (its message is dropped
-- at claim); a running one is cancelled by its consumer, which learns of it from this change.
-- ARGV: prefix, id, now, retention_ms
local id = ARGV[2]
local state = redis.call('HGET', task_key(id), 'state')
if not state then return {'gone'} end
if state ~= 'pending' and state ~= 'running' then return {'final', state} end
finalize(id, 'aborted', ARGV[3], ARGV[4], false, 'aborted')
return {'aborted', state}
