"""The demo world: a synthetic universe in which the whole mBLIP method runs offline and learns.

world     scenes, scene graphs, the Pillow renderer
realise   meaning representations -> text in 9 languages (`REALISERS`, `realise`)
annotate  English records with gold text in every language, for every task of the mix and its evals
build     `build_world(out_dir, ...)`: images, scene graphs, annotations, eval sets in official formats
"""
