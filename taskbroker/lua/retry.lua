-- retry: failed, timed-out or aborted tasks -> pending (or delayed, given a not_before), by hand
-- (POST /task/{id}/retry, POST /tasks/retry): a batch of ids in one atomic step, see rerun in the
-- prelude. A task another client scheduled is answered as if it were gone (owner rules of abort).
-- ARGV: prefix, now, timeout (epoch seconds), not_before (epoch seconds or ''), owner (or '' for
-- any), id...
-- Reply: per id, flat: id, outcome ('retried', 'kept', 'unscheduled' or 'gone'), state (the new
-- one, or the one kept), scheduler, priority.
local now, timeout, not_before, owner = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local task = read_task(id)
  local outcome, state, scheduler, priority = 'gone', '', '', '0'
  if task and (owner == '' or task.owner == owner) then
    scheduler = task.scheduler
    local why
    state, why = rerun(task, now, timeout, not_before)
    outcome = state and 'retried' or why
    state = state or task.state
    priority = redis.call('HGET', task_key(id), 'priority') or '0'
  end
  out[#out + 1] = id
  out[#out + 1] = outcome
  out[#out + 1] = state
  out[#out + 1] = scheduler
  out[#out + 1] = priority
end
return out
