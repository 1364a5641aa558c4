-- delete_scheduler: refused while the scheduler has live tasks, unless forced, which aborts them.
-- ARGV: prefix, name, force ('1' or '0'), now, retention_ms
local schedulers = prefix .. ':schedulers'
local name = ARGV[2]
if redis.call('HEXISTS', schedulers, name) == 0 then return {'gone'} end
local live = redis.call('SMEMBERS', live_key(name))
if #live > 0 and ARGV[3] ~= '1' then return {'busy', #live} end
for _, id in ipairs(live) do
  local task = read_task(id)
  if task then finalize(task, 'aborted', ARGV[4], ARGV[5], false, 'aborted: its scheduler was deleted') end
end
redis.call('HDEL', schedulers, name)
redis.call('HDEL', prefix .. ':scheduler_defaults', name)
redis.call('SREM', prefix .. ':paused', name)
redis.call('DEL', live_key(name))
-- Its retained final tasks stay readable by id until their retention ends, but are no longer
-- listed: nothing else would ever trim these indexes.
for _, state in ipairs(final_states) do
  redis.call('DEL', final_key(name, state))
end
return {'deleted', live}
