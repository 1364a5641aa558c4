-- schedule_fire: claim a due fire time, atomically, so that of several firing processes exactly
-- one creates the run. The claim is a compare-and-set on the schedule's version (every fire and
-- every change moves it on); the winner advances next_run_at, records the run in the history
-- and leaves a firing record (the task it will create, keyed by the task id chosen here) that
-- stays until the task is stored and its message confirmed. A firer that dies in between leaves
-- the record behind and another one creates the task from it: a claimed run is never lost.
-- ARGV: prefix, id, mode ('fire' | 'skip' | 'force'), version, following (epoch or ''),
--       task_id, now, firing record (JSON), history entry (JSON), history limit
local id, mode, version, following = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local task_id, now, record, entry, limit = ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
local key = prefix .. ':schedule:' .. id
local due = prefix .. ':schedule_due'
local firing = prefix .. ':schedule_firing'
if redis.call('EXISTS', key) == 0 then return {'gone'} end
if mode ~= 'force' then
  if redis.call('HGET', key, 'version') ~= version then return {'stale'} end
  redis.call('HINCRBY', key, 'version', 1)
  redis.call('HSET', key, 'next_run_at', following)
  if following == '' then redis.call('ZREM', due, id) else redis.call('ZADD', due, following, id) end
  if mode == 'skip' then return {'skipped'} end
  if redis.call('HGET', key, 'no_overlap') == '1' then
    local last = redis.call('HGET', key, 'last_task_id')
    if last and last ~= '' then
      local state = redis.call('HGET', task_key(last), 'state')
      if redis.call('HEXISTS', firing, last) == 1 or is_live(state) then
        return {'overlap', last}
      end
    end
  end
end
redis.call('HSET', key, 'last_run_at', now, 'last_task_id', task_id)
redis.call('HINCRBY', key, 'runs', 1)
redis.call('LPUSH', key .. ':runs', entry)
redis.call('LTRIM', key .. ':runs', 0, limit - 1)
redis.call('HSET', firing, task_id, record)
redis.call('ZADD', firing .. '_since', now, task_id)
return {'fired'}
