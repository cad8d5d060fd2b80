//! The tray icon, drawn in code: a disc in the colour of the state (no image files to ship or
//! keep in sync). 32×32 RGBA, edges anti-aliased by 4×4 supersampling; paused adds two white
//! bars, revoked a light ring on the dark disc so it stays visible on dark panels.

use super::view::Light;

pub const SIZE: u32 = 32;

/// The fill colour of each state (RGB). Tests find these exact colours on screen.
pub fn colour(light: Light) -> [u8; 3] {
    match light {
        Light::Idle | Light::Paused => [0x8c, 0x8c, 0x8c],
        Light::Connecting => [0xf0, 0xb4, 0x00],
        Light::Online => [0x1e, 0xb4, 0x3c],
        Light::Error => [0xdc, 0x28, 0x28],
        Light::Revoked => [0x28, 0x28, 0x2d],
    }
}

/// The icon's pixels, row-major RGBA.
pub fn rgba(light: Light) -> Vec<u8> {
    let fill = colour(light);
    let ring = match light {
        Light::Revoked => [0xc8, 0xc8, 0xc8],
        _ => fill.map(|c| (u16::from(c) * 3 / 5) as u8),
    };
    let centre = SIZE as f32 / 2.0;
    let outer = centre - 1.0;
    let inner = outer - 2.0;
    let mut pixels = Vec::with_capacity((SIZE * SIZE * 4) as usize);
    for y in 0..SIZE {
        for x in 0..SIZE {
            // Coverage of the disc and of its inside (the ring is the difference).
            let (mut disc, mut body) = (0u32, 0u32);
            for sy in 0..4 {
                for sx in 0..4 {
                    let dx = x as f32 + (sx as f32 + 0.5) / 4.0 - centre;
                    let dy = y as f32 + (sy as f32 + 0.5) / 4.0 - centre;
                    let r = (dx * dx + dy * dy).sqrt();
                    disc += u32::from(r <= outer);
                    body += u32::from(r <= inner);
                }
            }
            let mut rgb = if body == 16 { fill } else { ring };
            if light == Light::Paused && is_pause_bar(x, y) {
                rgb = [0xff, 0xff, 0xff];
            }
            let alpha = (disc * 255 / 16) as u8;
            pixels.extend_from_slice(&[rgb[0], rgb[1], rgb[2], alpha]);
        }
    }
    pixels
}

/// Two vertical bars in the middle of the disc: ⏸.
fn is_pause_bar(x: u32, y: u32) -> bool {
    (10..22).contains(&y) && ((11..14).contains(&x) || (18..21).contains(&x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(pixels: &[u8], x: u32, y: u32) -> [u8; 4] {
        let at = ((y * SIZE + x) * 4) as usize;
        [pixels[at], pixels[at + 1], pixels[at + 2], pixels[at + 3]]
    }

    #[test]
    fn a_disc_in_the_state_colour_with_transparent_corners() {
        for light in [Light::Idle, Light::Connecting, Light::Online, Light::Error, Light::Revoked, Light::Paused] {
            let pixels = rgba(light);
            assert_eq!(pixels.len(), (SIZE * SIZE * 4) as usize);
            let [r, g, b] = colour(light);
            assert_eq!(pixel(&pixels, 8, 16), [r, g, b, 255], "{light:?} fills the disc");
            assert_eq!(pixel(&pixels, 0, 0)[3], 0, "{light:?}: corners are transparent");
        }
        assert_eq!(pixel(&rgba(Light::Paused), 12, 16), [255, 255, 255, 255], "paused shows its bars");
        assert_eq!(pixel(&rgba(Light::Idle), 12, 16)[..3], colour(Light::Idle), "idle has none");
    }

    #[test]
    fn every_state_has_its_own_colour_except_paused_which_has_bars() {
        let lights = [Light::Idle, Light::Connecting, Light::Online, Light::Error, Light::Revoked];
        for (i, a) in lights.iter().enumerate() {
            for b in &lights[i + 1..] {
                assert_ne!(colour(*a), colour(*b), "{a:?} and {b:?}");
            }
        }
    }
}
