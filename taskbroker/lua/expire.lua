-- expire: live tasks (delayed, pending or running) past their timeout -> timeout. Reads only the due slice of the deadline
-- index, so a sweep costs O(expired), and runs atomically, so concurrent daemons never expire
-- the same task twice. Every id read leaves the deadline index (a final or vanished task has no
-- business there), so the index and the live sets lose the whole batch in one command each.
-- ARGV: prefix, now, limit, retention_ms
local ids = redis.call('ZRANGE', deadlines, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {} end
local out = {}
local leaving = {}
local final_entries = {}
for _, id in ipairs(ids) do
  local task = read_task(id)
  if task and is_live(task.state) then
    write_final(task, 'timeout', ARGV[2], ARGV[4], false, 'timed out', final_entries)
    if task.state == 'delayed' then undelay(task) end
    local members = group_of(leaving, task.scheduler)
    members[#members + 1] = id
    out[#out + 1] = id
    out[#out + 1] = task.scheduler
    out[#out + 1] = task.state
    out[#out + 1] = task.attempts
    out[#out + 1] = task.lease_owner or ''
  end
end
call_in_chunks('ZREM', deadlines, ids)
call_in_chunks('ZREM', unclaimed, ids)
for scheduler, members in pairs(leaving) do call_in_chunks('SREM', live_key(scheduler), members) end
index_final(final_entries, 'timeout', ARGV[2], ARGV[4])
return out
