"""The tiny networks the tests share: small enough to train in seconds, shaped like the real ones."""

# A two-level U-Net for 8x8 digits (16 and 32 channels would be the smallest real recipe's; 8 is enough to test).
TINY_UNET = {"arch": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "groups": 4}
