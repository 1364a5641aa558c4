-- schedule_save: create or update a recurring schedule, keeping names unique.
-- ARGV: prefix, mode ('create' | 'update'), id, name, definition (JSON), no_overlap ('1' | '0'),
--       owner, now, next_run_at (epoch, '' for none, 'keep'), anchor (epoch or 'keep'),
--       last_error (text, or 'keep')
local mode, id, name, definition, no_overlap = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local owner, now, next_run, anchor, last_error = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local key = prefix .. ':schedule:' .. id
local names = prefix .. ':schedule_names'
local due = prefix .. ':schedule_due'
local exists = redis.call('EXISTS', key) == 1
if mode == 'update' and not exists then return {'gone'} end
local holder = redis.call('HGET', names, name)
if holder and holder ~= id then return {'name_taken', holder} end
if exists then
  local old = redis.call('HGET', key, 'name')
  if old ~= name then redis.call('HDEL', names, old) end
else
  redis.call('HSET', key, 'id', id, 'owner', owner, 'created_at', now, 'runs', 0, 'version', 0,
    'last_run_at', '', 'last_task_id', '', 'last_error', '')
end
redis.call('HSET', names, name, id)
redis.call('HSET', key, 'name', name, 'definition', definition, 'no_overlap', no_overlap, 'updated_at', now)
-- Every change moves the version on, so a firer that read the old definition fires nothing.
redis.call('HINCRBY', key, 'version', 1)
if anchor ~= 'keep' then redis.call('HSET', key, 'anchor', anchor) end
if last_error ~= 'keep' then redis.call('HSET', key, 'last_error', last_error) end
if next_run ~= 'keep' then
  redis.call('HSET', key, 'next_run_at', next_run)
  if next_run == '' then redis.call('ZREM', due, id) else redis.call('ZADD', due, next_run, id) end
end
return {'ok'}
