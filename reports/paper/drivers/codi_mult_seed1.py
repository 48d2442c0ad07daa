"CODI on 2x2 multiplication, seed 1, through the kit's codi_mult_grid (writes /tmp/h10/codi_mult_seed1.json; combine_codi_mult.py reads it)"
import json, time, torch; torch.set_num_threads(1)
from cotdistill.codi import codi_mult_grid
t0 = time.time()
out = codi_mult_grid(k=2, seed=1, eval_every=600, icot_dir="/work/shared/data/icot_mult")
out["wall_s"] = round(time.time() - t0, 1)
json.dump(out, open("/tmp/h10/codi_mult_seed1.json", "w"), indent=1, default=str)
print("saved", out["wall_s"], flush=True)
