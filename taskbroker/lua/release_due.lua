-- release_due: delayed tasks whose not_before has come -> pending, a batch at a time, for the
-- timeout daemon to publish. Reads only the due slice of the delayed index (ZRANGE BYSCORE
-- LIMIT: a sweep with nothing due costs O(log n) however many wait), and runs atomically, so
-- concurrent daemons never release one task twice. A released task enters the unclaimed index
-- as a new task does (due republish_after from now): a publish that is lost or never confirmed
-- is made again by reconciliation (the daemon makes a failed one due at once: republish_soon).
-- Per task it costs one read, one write and its event; the indexes and the per-scheduler
-- counts change once per batch (what undelay() does for one task, done for all of them).
-- ARGV: prefix, now, limit
-- Returns id, scheduler, priority for each released task.
local ids = redis.call('ZRANGE', delayed, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {} end
local out = {}
local republish_at = tonumber(ARGV[2]) + republish_after
local unclaimed_entries = {}
local released_per_scheduler = {}
for _, id in ipairs(ids) do
  local key = task_key(id)
  local f = redis.call('HMGET', key, 'state', 'scheduler', 'attempts', 'owner', 'events', 'priority')
  -- Anything else (no longer delayed, or gone) only leaves the index: its entry was stale.
  if f[1] == 'delayed' then
    local task = {id = id, scheduler = f[2], attempts = f[3] or '0', owner = f[4] or '', events = f[5]}
    redis.call('HSET', key, 'state', 'pending', 'events', emit(task, 'pending', ARGV[2]))
    released_per_scheduler[task.scheduler] = (released_per_scheduler[task.scheduler] or 0) + 1
    unclaimed_entries[#unclaimed_entries + 1] = republish_at
    unclaimed_entries[#unclaimed_entries + 1] = id
    out[#out + 1] = id
    out[#out + 1] = task.scheduler
    out[#out + 1] = f[6] or '0'
  end
end
call_in_chunks('ZREM', delayed, ids)
call_in_chunks('ZADD', unclaimed, unclaimed_entries)
for scheduler, released in pairs(released_per_scheduler) do lower_delayed_count(scheduler, released) end
return out
