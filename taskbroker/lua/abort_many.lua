-- abort_many: the bulk abort (POST /tasks/abort): of a batch of ids, the live tasks that match
-- the filter -> aborted, at most `limit` of them, in one atomic step. A pending or delayed task
-- then never runs; a running one is cancelled by its consumer, as for abort.
-- ARGV: prefix, now, retention_ms, owner (or '' for any), state (or '' for any live state),
-- created_before (epoch seconds or ''), limit, id...
-- Reply: the ids aborted.
local now, retention_ms, owner, wanted = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local created_before = false
if ARGV[6] ~= '' then created_before = tonumber(ARGV[6]) end
local limit = tonumber(ARGV[7])
local live = {pending = true, running = true, delayed = true}
local aborted = {}
local final_entries = {}
for i = 8, #ARGV do
  if #aborted >= limit then break end
  local id = ARGV[i]
  local task = read_task(id)
  if task and live[task.state] and (wanted == '' or task.state == wanted)
      and (owner == '' or task.owner == owner)
      and (not created_before or tonumber(redis.call('HGET', task_key(id), 'created_at')) <= created_before) then
    finalize(task, 'aborted', now, retention_ms, false, 'aborted', final_entries)
    aborted[#aborted + 1] = id
  end
end
index_final(final_entries, 'aborted', now, retention_ms)
return aborted
