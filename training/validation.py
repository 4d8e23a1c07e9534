"""The validation split: styles and contents held out from training, used to choose models and settings.

File names in the shared corpus (`styles_more/` and `content_more/`, see shared/data/SOURCES_more.md).
Training skips them; `python -m benchmarks.evaluate --split validation` evaluates on them. The
corpus's `eval/` folder is never used for either: it is kept for the final report.
"""
from __future__ import annotations

VALIDATION_STYLE_FOLDER = "styles_more"
VALIDATION_CONTENT_FOLDER = "content_more"

# 16 styles spanning what eval/ covers (line work, impressionist oils, ukiyo-e, East Asian ink,
# portraits) and more: two black-and-white prints, a red-chalk drawing, fauvism, pointillism.
VALIDATION_STYLES: tuple[str, ...] = (
    "claude_lorrain_harbour_with_a_large_tower_etching.jpg",
    "edvard_munch_mans_head_in_womans_hair_woodcut.jpg",
    "claude_monet_rocks_at_port_goulphar_belle_ile.jpg",
    "camille_pissarro_boulevard_montmartre_at_night.jpg",
    "utagawa_hiroshige_plum_park_in_kameido.jpg",
    "kitagawa_utamaro_three_beauties_of_the_present_day.jpg",
    "ito_jakuchu_rooster.jpg",
    "pierre_auguste_renoir_acrobats_at_the_cirque_fernando.jpg",
    "vincent_van_gogh_wheat_field_with_cypresses.jpg",
    "huang_gongwang_dwelling_in_the_fuchun_mountains.jpg",
    "johannes_vermeer_the_milkmaid.jpg",
    "henri_matisse_woman_with_a_hat.jpg",
    "leonardo_da_vinci_portrait_of_a_man_in_red_chalk.jpg",
    "jmw_turner_rain_steam_and_speed.jpg",
    "paul_gauguin_tahitian_women_on_the_beach.jpg",
    "georges_seurat_bathers_at_asnieres.jpg",
)

# 8 archive-type contents: portraits and faces, a printed page, colour photographs, streets, a landscape.
VALIDATION_CONTENTS: tuple[str, ...] = (
    "apsaroke_mother_and_child_montana_1908.jpg",
    "kant_was_ist_aufklaerung_berlinische_monatsschrift_berlin_1784.jpg",
    "prokudin_gorsky_self_portrait_karolitskhali_river_georgia_1912.jpg",
    "tea_harvest_chakva_georgia_c1910.jpg",
    "rainy_street_scene_london_1900.jpg",
    "great_sphinx_and_pyramids_giza_1870s.jpg",
    "norwegian_bride_with_bridal_crown_1920s.jpg",
    "harrods_food_hall_egg_week_london_1920.jpg",
)

HELD_OUT_NAMES = frozenset(VALIDATION_STYLES + VALIDATION_CONTENTS)
