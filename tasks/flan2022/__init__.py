"""The Flan 2022 collection (Longpre et al. 2023) from its exported files, mixed as published."""
