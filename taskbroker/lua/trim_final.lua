-- trim_final: every scheduler's indexes of retained final tasks lose the entries whose retention
-- has ended. write_final trims an index each time it adds to it, so a busy scheduler's stay
-- bounded; this is for the idle one: a scheduler that failed a million tasks once and then fell
-- quiet would keep a million entries (~145 B each) whose hashes Redis expired long ago. The
-- timeout daemon runs it now and then; with nothing to drop it costs O(log n) per index.
-- ARGV: prefix, now, retention_ms
-- Returns how many entries it removed.
local score = final_score(ARGV[2])
local removed = 0
for _, scheduler in ipairs(redis.call('HKEYS', prefix .. ':schedulers')) do
  for _, state in ipairs(final_states) do
    removed = removed + trim_final_index(final_key(scheduler, state), state, score, ARGV[3])
  end
end
return removed
